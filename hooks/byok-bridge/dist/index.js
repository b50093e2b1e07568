// Entry point Directus loads ("path" in package.json). No build step: the code lives in ../src/index.js.
export * from "../src/index.js";
export { default } from "../src/index.js";
