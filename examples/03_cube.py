"""The tutorial's cube program.

As in the tutorial, ``my_numbers`` is defined under the main guard and
``p.join`` lacks its parentheses, so "Done" may come first. Under spawn and
forkserver the global still reaches the child: proctor sends functions from
``__main__`` by value, with the globals they use.

Expected output (any order):
Done
3 cube is 27
4 cube is 64
5 cube is 125
6 cube is 216
7 cube is 343
8 cube is 512
"""

from proctor import Process


def cube(x):
    for x in my_numbers:
        print('%s cube is %s' % (x, x**3))


if __name__ == '__main__':
    my_numbers = [3, 4, 5, 6, 7, 8]
    p = Process(target=cube, args=('x',))
    p.start()
    p.join
    print ("Done")
