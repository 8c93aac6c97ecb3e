from cnndsl.cli import entry

entry()
