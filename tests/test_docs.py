"""The documentation matches the code: the environment variables, the routes, the links, the bench tables.

Variables: what `config.load_config` reads (found by handing it a mapping that records every key asked
for) and what `gunicorn.conf.py` reads from `os.environ` are exactly the variables of `.env.example` and
of the tables of docs/configuration.md. Any other module that reads the environment reads only those, or
one of OTHER_VARIABLES, which docs/configuration.md names under "Other environment variables".
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import unicodedata
from collections.abc import Mapping
from pathlib import Path

import pytest

from dashboard.config import load_config
from conftest import PROJECT

ENV_EXAMPLE = PROJECT / ".env.example"
CONFIGURATION = PROJECT / "docs" / "configuration.md"
API = PROJECT / "docs" / "api.md"
README = PROJECT / "README.md"
PAGES = [README, *sorted((PROJECT / "docs").glob("*.md"))]
# Read by the app but not its settings (the system's time zone): documented, not in .env.example.
OTHER_VARIABLES = {"TZ"}
NOT_APP_CODE = {"tests", "bench", "examples", "node_modules", "static", "var"}  # and hidden folders (.venv)
ENV_READ = re.compile(r"""os\.(?:environ(?:\.get\(|\.setdefault\(|\.pop\(|\[)|getenv\()\s*["']([A-Z][A-Z0-9_]*)["']""")
GUNICORN_READ = re.compile(r"""os\.environ\.get\(\s*"([A-Z][A-Z0-9_]*)"(?:\s*,\s*"([^"]*)")?\s*\)""")


class Recording(Mapping):
    """An environment that remembers every key asked for."""

    def __init__(self, values: dict[str, str] | None = None):
        self.values, self.asked = values or {}, set()

    def __getitem__(self, key: str) -> str:
        self.asked.add(key)
        return self.values[key]

    def __iter__(self):
        return iter(self.values)

    def __len__(self) -> int:
        return len(self.values)


def config_variables() -> set[str]:
    environ = Recording()
    load_config(environ)
    return environ.asked


def gunicorn_defaults() -> dict[str, str]:
    """Variable -> default ("" when none) of each os.environ.get in gunicorn.conf.py."""
    source = (PROJECT / "gunicorn.conf.py").read_text(encoding="utf-8")
    return {name: default or "" for name, default in GUNICORN_READ.findall(source)}


def env_example() -> dict[str, str]:
    text = ENV_EXAMPLE.read_text(encoding="utf-8")
    return dict(re.findall(r"^([A-Z][A-Z0-9_]*)=(.*)$", text, re.M))


def documented_variables() -> set[str]:
    """The variables named in the first cell of the tables of docs/configuration.md."""
    names = set()
    for line in CONFIGURATION.read_text(encoding="utf-8").splitlines():
        if line.startswith("|") and not line.startswith("|---"):
            names |= set(re.findall(r"`([A-Z][A-Z0-9_]*)`", line.split("|")[1]))
    return names - {"Variable"}


def differences(found: set[str], expected: set[str]) -> str:
    return f"missing {sorted(expected - found)}, not read by the code {sorted(found - expected)}"


def test_the_variables_read_are_exactly_those_of_env_example_and_configuration_md():
    read = config_variables() | set(gunicorn_defaults())
    assert len(config_variables()) > 40 and {"GUNICORN_WORKERS", "PROMETHEUS_MULTIPROC_DIR"} <= read
    assert set(env_example()) == read, f".env.example: {differences(set(env_example()), read)}"
    assert documented_variables() == read, f"docs/configuration.md: {differences(documented_variables(), read)}"


def test_env_example_shows_each_default():
    example, defaults = env_example(), load_config({})
    for name in config_variables():
        assert load_config({name: example[name]})[name] == defaults[name], f".env.example: {name}={example[name]}"
    for name, default in gunicorn_defaults().items():
        assert example[name] == default, f".env.example: {name}={example[name]}, gunicorn.conf.py: {default!r}"


def test_no_module_reads_an_undocumented_variable():
    known = config_variables() | set(gunicorn_defaults()) | OTHER_VARIABLES
    read: dict[str, set[str]] = {}
    for folder, subfolders, files in os.walk(PROJECT):
        subfolders[:] = [d for d in subfolders if d not in NOT_APP_CODE and not d.startswith(".")]
        for path in (Path(folder) / f for f in files if f.endswith(".py")):
            for name in ENV_READ.findall(path.read_text(encoding="utf-8")):
                read.setdefault(name, set()).add(path.relative_to(PROJECT).as_posix())
    assert "TZ" in read, "the scan finds the environment reads"
    unknown = {name: sorted(paths) for name, paths in read.items() if name not in known}
    assert not unknown, f"read from the environment but not documented: {unknown}"
    text = CONFIGURATION.read_text(encoding="utf-8")
    assert all(f"`{name}`" in text.split("## Other environment variables", 1)[1] for name in OTHER_VARIABLES)


def api_md_endpoints() -> set[tuple[str, str]]:
    """(method, path) of each endpoint in the first cells of docs/api.md's tables, query strings dropped."""
    found = set()
    for line in API.read_text(encoding="utf-8").splitlines():
        if line.startswith("| `"):
            for method, path in re.findall(r"`(GET|POST) ([^`?\s]+)", line.split("|")[1]):
                found.add((method, path))
    return found


def test_api_md_lists_every_route(make_app, tmp_path):
    (tmp_path / "orchestrator").mkdir()
    app = make_app(tmp_path / "orchestrator")
    routes = {(method, re.sub(r"<[^:<>]+:", "<", rule.rule))
              for rule in app.url_map.iter_rules() if rule.endpoint != "static"
              for method in rule.methods - {"HEAD", "OPTIONS"}}
    listed = api_md_endpoints()
    assert listed == routes, f"docs/api.md: missing {sorted(routes - listed)}, no such route {sorted(listed - routes)}"


def slug(heading: str) -> str:
    """GitHub's anchor of a Markdown heading."""
    text = heading.strip().lower().replace("`", "")
    text = "".join(ch for ch in text if ch in " -_" or unicodedata.category(ch)[0] in "LN")
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """The anchors of a page's headings (a repeated heading gets -1, -2, ... as on GitHub)."""
    found, counts = set(), {}
    for heading in re.findall(r"^#{1,6} (.+)$", without_fences(page.read_text(encoding="utf-8")), re.M):
        base = slug(heading)
        found.add(f"{base}-{counts[base]}" if base in counts else base)
        counts[base] = counts.get(base, 0) + 1
    return found


def without_fences(text: str) -> str:
    """The Markdown without its fenced code blocks (a `# comment` there is no heading)."""
    return re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)


def without_code(text: str) -> str:
    """The Markdown without code, fenced or inline (neither holds links)."""
    return re.sub(r"`[^`\n]*`", "", without_fences(text))


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(PROJECT).as_posix())
def test_every_relative_link_points_to_an_existing_file_and_heading(page):
    broken = []
    for target in re.findall(r"!?\[[^\]]*\]\(([^)\s]+)\)", without_code(page.read_text(encoding="utf-8"))):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        name = file.relative_to(PROJECT).as_posix() if file.is_relative_to(PROJECT) else str(file)
        if not file.exists():
            broken.append(f"{target} (no file {name})")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            broken.append(f"{target} (no heading #{anchor} in {name})")
    assert not broken, f"{page.relative_to(PROJECT)}: {broken}"


def test_the_readmes_module_table_names_files_that_exist():
    """Names in a table row whose first cell is a folder (`dashboard/web/`) are that folder's files."""
    paths = set()
    for line in without_fences(README.read_text(encoding="utf-8")).splitlines():
        names = re.findall(r"`([\w./-]+(?:\.py|\.sql|/))`", line)
        folder = re.match(r"\| `([\w./-]+/)` \|", line)
        base = folder.group(1) if folder else ""
        paths |= {name if name == base else base + name for name in names}
    assert {"app.py", "database.py", "dashboard/config.py", "dashboard/web/endpoints.py", "tests/"} <= paths
    missing = sorted(name for name in paths if not (PROJECT / name).exists())
    assert not missing, f"README.md names files that do not exist: {missing}"


def test_performance_md_tables_are_rendered_from_the_bench_results():
    proc = subprocess.run([sys.executable, str(PROJECT / "bench" / "report.py"), "--check"],
                          capture_output=True, text=True, cwd=PROJECT, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
