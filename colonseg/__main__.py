from colonseg.cli.main import app

app(prog_name="colonseg")
