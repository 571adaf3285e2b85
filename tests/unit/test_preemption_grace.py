"""PreemptionCallback's grace timer: a rank still busy `grace_s` after the signal exits 75, and
one whose training ended in time is left alone (a notebook that caught `Preempted` lives on).
One process checks both, since the timer ends the process it runs in."""

import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent("""
    import os, signal, time
    from nemo_lite.lightning.preemption import PreemptionCallback

    ended = PreemptionCallback(grace_s=0.3)
    ended.on_train_start(None, None)
    os.kill(os.getpid(), signal.SIGUSR1)
    time.sleep(0.05)
    assert ended.received and ended.received[0] == signal.SIGUSR1, ended.received
    ended.teardown(None, None, "fit")
    time.sleep(0.8)
    print("survived the ended run's grace period", flush=True)

    busy = PreemptionCallback(grace_s=0.3)
    busy.on_train_start(None, None)
    start = time.monotonic()
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(5)
    print("still alive 5 s after SIGTERM", flush=True)
""")


def test_grace_timer_exits_75_only_while_training_runs():
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                          timeout=60)
    assert "survived the ended run's grace period" in done.stdout, done.stderr
    assert "still alive" not in done.stdout, done.stdout
    assert done.returncode == 75, (done.returncode, done.stderr)
    assert "SIGTERM 0 s ago" in done.stderr and "has not finished its checkpoint" in done.stderr
