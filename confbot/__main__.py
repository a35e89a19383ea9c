from confbot.cli import main

main()
