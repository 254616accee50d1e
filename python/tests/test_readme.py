"""The README's Python session, run as a doctest: what it shows is what the package does."""

import doctest
import re

from conftest import REPO


def test_readme_session(tmp_path, monkeypatch):
    text = (REPO / "README.md").read_text()
    blocks = re.findall(r"```pycon\n(.*?)```", text, re.S)
    assert len(blocks) == 1, "the README has one Python session"
    monkeypatch.chdir(tmp_path)
    test = doctest.DocTestParser().get_doctest(blocks[0], {}, "README.md", "README.md", 0)
    assert len(test.examples) >= 10
    runner = doctest.DocTestRunner()
    runner.run(test)
    assert runner.failures == 0 and runner.tries == len(test.examples)
