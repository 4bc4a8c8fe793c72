#!/usr/bin/env python3
"""The example cardd plugin: the template plugin (../template/) with its simulated SDK.

One reader, `r1`, holding a small simulated ETC card; the test hooks are on, so cardd's tests
and `cardd conformance --plugin python3 examples/example_plugin.py` can pull the card, make it
silent, hang or crash the plugin. To write a plugin for your readers, copy ../template/ and
follow template/plugin.py.
"""

import os
import runpy
import sys

TEMPLATE = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "template")

if __name__ == "__main__":
    sys.path.insert(0, os.path.abspath(TEMPLATE))
    runpy.run_path(os.path.join(TEMPLATE, "plugin.py"), run_name="__main__")
