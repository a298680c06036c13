"""Process settings of the engines: the malloc arenas that detection's threads share."""

import platform
import subprocess
import sys

import pytest


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc's mallopt")
def test_detections_threads_share_two_malloc_arenas_unless_the_user_chose():
    script = ("from openfootprints.predict.engines import fewer_malloc_arenas; "
              "print(fewer_malloc_arenas())")
    ran = [subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True)
           .stdout.strip() for env in ({"PATH": ""}, {"PATH": "", "MALLOC_ARENA_MAX": "4"})]
    assert ran == ["True", "False"]  # glibc took the cap; a user's MALLOC_ARENA_MAX is left as it is
