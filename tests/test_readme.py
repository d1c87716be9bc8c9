"""README.md and .ci/run tell the same story: the CI runs the README's test command."""

from pathlib import Path

ROOT = Path(__file__).parents[1]


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    for command in (
        'pip install torch==2.13.0 && pip install -e ".[testing]"',
        'xvfb-run -a -s "-screen 0 1280x1024x24" python -m pytest',
    ):
        assert command in readme
    assert 'xvfb-run -a -s "-screen 0 1280x1024x24" python -m pytest\n' in ci
    assert ci.index("pip install torch==2.13.0") < ci.index('pip install -e ".[testing]"')
    assert "set -euo pipefail" in ci
