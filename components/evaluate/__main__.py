from litops.core.component_cli import run_main
from litops.evaluate.cli import main

run_main(main, "evaluate")
