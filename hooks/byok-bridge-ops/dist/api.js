// Entry points Directus loads ("path" in package.json). No build step: the code lives in ../src/.
export { default } from "../src/api.js";
