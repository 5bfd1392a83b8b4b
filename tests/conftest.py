import os
import sys

# The AIHWKIT harness sits beside the tests.
sys.path.insert(0, os.path.dirname(__file__))
