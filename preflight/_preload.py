"""The forkserver's preload (`preflight.program_imports.forkserver`): importing it loads the provider
modules the project's program imports, before any run is forked."""

from preflight.program_imports import preload

preload()
