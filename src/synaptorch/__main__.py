from synaptorch.cli import main

main()
