from aichaos.cli.app import main

main()
