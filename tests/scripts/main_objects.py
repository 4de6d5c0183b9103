"""Targets defined in __main__: a class instance, a Process subclass, a notebook-style function.

argv: start method. Prints one line per case: the exit code, then what the result
is -- for a ``Point``, whether it is an instance of this very class (not a copy of
it made by unpickling by value) and what its attributes and methods give.
"""

import sys

import proctor


class Multiplier:
    def __init__(self, factor):
        self.factor = factor

    def __call__(self, x):
        return Point(x * self.factor, -x)


class Point:
    def __init__(self, x, y):
        self.x, self.y = x, y

    def __repr__(self):
        return f"Point({self.x}, {self.y})"

    def manhattan(self):
        return abs(self.x) + abs(self.y)


class Greeter(proctor.Process):
    def __init__(self, who):
        super().__init__()
        self.who = who

    def run(self):
        return f"hello {self.who} from {proctor.current_process().name}"


# A notebook cell: code compiled at run time, not from any file.
NOTEBOOK_CELL = """
def cell_function(values):
    return sum(v * scale for v in values)
"""

if __name__ == "__main__":
    proctor.set_start_method(sys.argv[1])
    namespace = {"__name__": "__main__", "scale": 10}
    exec(compile(NOTEBOOK_CELL, "<ipython-input-1>", "exec"), namespace)
    cases = [
        proctor.Process(target=Multiplier(3), args=(7,)),
        Greeter("world"),
        proctor.Process(target=namespace["cell_function"], args=([1, 2, 3],)),
    ]
    for p in cases:
        p.start()
        p.join(60)
        result = p.result
        if type(result).__name__ == "Point":
            described = (
                f"Point is-this-class={type(result) is Point} "
                f"isinstance={isinstance(result, Point)} "
                f"x={result.x} y={result.y} manhattan={result.manhattan()}"
            )
        else:
            described = f"{type(result).__name__} {result!r}"
        print(p.exitcode, described, flush=True)
