from colonseg.cli.main import main

main()
