"""Test support for adapter authors: the public adapter conformance suite.

:mod:`bridge.testing.conformance` states what every CRM adapter owes the bridge and checks it
against the vendor's emulator over real HTTP. It imports pytest, a development dependency:
tests import it, product code never does.
"""

import pytest

# Plain ``assert`` in the suite reports its operands, as it would in a test module.
pytest.register_assert_rewrite("bridge.testing.conformance")
