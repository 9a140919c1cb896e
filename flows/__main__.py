from litops.flows.cli import main

main()
