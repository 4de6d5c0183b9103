"""Objects of the main script keep their identity in every direction, under one start method.

argv: start method. Defines a class, a dataclass, an enum, an exception and a
function in ``__main__``, sends them through Process arguments and results,
``p.exception``, Queue and Pipe -- parent to child, child to parent, child to
sibling, child to grandchild and back -- and prints one line per check:
``<check> True`` when the receiver got its own class (``isinstance``,
``except``, enum ``is``) or its own function.
"""

import dataclasses
import enum
import sys

import proctor


class Point:
    def __init__(self, x, y):
        self.x, self.y = x, y

    def norm2(self):
        return self.x * self.x + self.y * self.y

    def __eq__(self, other):
        return isinstance(other, Point) and (self.x, self.y) == (other.x, other.y)


@dataclasses.dataclass(frozen=True)
class Pair:
    left: int
    right: int


class Color(enum.Enum):
    RED = 1
    GREEN = 2


class MyError(Exception):
    pass


def double(x):
    return 2 * x


class Tree:
    def leaf(self):
        return Leaf()


class Leaf:
    def tree(self):
        return Tree()


COUNTER = 0


def bump():
    global COUNTER
    COUNTER += 1


def read_counter():
    return COUNTER


def factorial(n):
    return 1 if n <= 1 else n * factorial(n - 1)


def cycles_and_globals():
    """Classes that name each other, recursion, and one namespace for the script's functions."""
    bump()
    bump()
    return [
        isinstance(Tree().leaf().tree(), Tree),
        factorial(5) == 120,
        read_counter() == 2,
    ]


def samples():
    return [Point(1, 2), Pair(3, 4), Color.GREEN, MyError("boom"), double]


def check(objects):
    """What a receiver checks, against its own names: one bool per sample."""
    point, pair, color, error, function = objects
    return [
        isinstance(point, Point) and point.norm2() == 5,
        isinstance(pair, Pair) and pair == Pair(3, 4),
        color is Color.GREEN,
        isinstance(error, MyError) and _caught(error),
        function is double,
    ]


def _caught(error):
    try:
        raise error
    except MyError:
        return True
    except Exception:
        return False


# -- what the children run ---------------------------------------------------------------


def return_samples():
    return samples()


def raise_my_error():
    raise MyError("from the child")


def check_arguments(*objects):
    return check(objects)


def put_samples(q):
    q.put(samples())


def send_samples(conn):
    conn.send(samples())
    conn.close()


def get_and_check(q):
    return check(q.get(timeout=60))


def ask_grandchild(method):
    p = proctor.get_context(method).Process(target=return_samples)
    p.start()
    p.join(60)
    objects = p.result
    p.close()
    return check(objects), objects


def run(ctx, target, *args):
    p = ctx.Process(target=target, args=args)
    p.start()
    p.join(60)
    outcome = (p.exitcode, p.result, p.exception)
    p.close()
    return outcome


def report(name, flags):
    print(name, all(flags) if isinstance(flags, list) else flags, flags, flush=True)


def main(method, other):
    ctx = proctor.get_context(method)

    _code, result, _exc = run(ctx, return_samples)
    report("result", check(result))

    _code, result, _exc = run(ctx, cycles_and_globals)
    report("cycles and globals", result)

    _code, _result, exc = run(ctx, raise_my_error)
    report("exception", isinstance(exc, MyError) and _caught(exc))

    _code, result, _exc = run(ctx, check_arguments, *samples())
    report("arguments", result)

    q = ctx.Queue()
    p = ctx.Process(target=put_samples, args=(q,))
    p.start()
    report("queue child->parent", check(q.get(timeout=60)))
    p.join(60)
    p.close()

    reader, writer = ctx.Pipe(duplex=False)
    p = ctx.Process(target=send_samples, args=(writer,))
    p.start()
    writer.close()
    report("pipe child->parent", check(reader.recv(timeout=60)))
    p.join(60)
    p.close()
    reader.close()

    p = ctx.Process(target=get_and_check, args=(q,))
    p.start()
    q.put(samples())
    p.join(60)
    report("queue parent->child", p.result)
    p.close()

    # Sibling to sibling, the second of the other start method.
    producer = ctx.Process(target=put_samples, args=(q,))
    consumer = proctor.get_context(other).Process(target=get_and_check, args=(q,))
    producer.start()
    consumer.start()
    producer.join(60)
    consumer.join(60)
    report(f"queue {method}->{other} sibling", consumer.result)
    producer.close()
    consumer.close()
    q.close()

    _code, result, _exc = run(ctx, ask_grandchild, method)
    in_child, objects = result
    report("grandchild->child", in_child)
    report("grandchild->child->parent", check(objects))

    # Receiving its own classes back never rewrites them (cloudpickle's class
    # tracking would set the copies' methods on the original).
    report("classes untouched", [vars(Point)[k] is v for k, v in ORIGINAL_POINT.items()])


ORIGINAL_POINT = dict(vars(Point))

if __name__ == "__main__":
    method = sys.argv[1]
    other = {"fork": "spawn", "spawn": "fork", "forkserver": "spawn"}[method]
    main(method, other)
