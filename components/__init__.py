"""The program's components. Importing the package first makes the provider SDKs load with their
annotations postponed (`components.sdk_annotations`): the program, preflight and the tests all import
this package before any provider."""

from components import sdk_annotations

sdk_annotations.install()
