"""tests/k8s: fake_apiserver (a stand-in Kubernetes API server) is imported by the tests here and in tests/storage."""

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
