from llamactl.cli import run

run()
