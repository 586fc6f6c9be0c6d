from ablab.cli.main import main

main()
