from litops.core.component_cli import run_main
from litops.register.cli import main

run_main(main, "register")
