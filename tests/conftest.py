"""Test-suite wiring: fixture modules are plugins so every test folder can use them."""

pytest_plugins = ["tests.fixtures.servers"]
