"""Start a non-daemonic child that finishes later and a daemonic one that never does;
exit without joining either. argv: start method, marker file path."""

import sys
import time

import proctor


def slow_writer(path):
    time.sleep(0.5)
    with open(path, "w") as f:
        f.write("done")


def forever():
    time.sleep(600)


if __name__ == "__main__":
    proctor.set_start_method(sys.argv[1])
    proctor.Process(target=slow_writer, args=(sys.argv[2],)).start()
    d = proctor.Process(target=forever, daemon=True)
    d.start()
    print(d.pid, flush=True)
