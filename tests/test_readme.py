import pathlib

TOP = pathlib.Path(__file__).parent.parent


def test_ci_runs_the_readme_test_command():
    readme = (TOP / 'README.rst').read_text()
    ci = (TOP / '.ci' / 'run').read_text()
    command = 'bash tests/run'
    assert command in readme and command in ci
    # The two commands come first.
    first = readme.index('::')
    assert readme.index('multidb demo') > first
    assert readme.index(command) < readme.index('What it is')
