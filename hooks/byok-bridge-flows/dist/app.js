// Entry points Directus loads ("path" in package.json). No build step: the code lives in ../src/.
export * from "../src/app.js";
