"""Test helpers shipped with the package: fakes for transport and control-flow tests."""
