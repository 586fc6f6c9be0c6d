from ablab.cli import main

main()
