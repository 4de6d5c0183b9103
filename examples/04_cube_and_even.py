"""The tutorial's two processes at once: cubes and even numbers, then "Done".

Expected output (any order, "Done" last):
3 cube is 27
4 cube is 64
5 cube is 125
6 cube is 216
7 cube is 343
8 cube is 512
4 is an even number
6 is an even number
8 is an even number
Done
"""

from proctor import Process


def cube(x):
    for x in my_numbers:
        print('%s cube is %s' % (x, x**3))


def evenno(x):
    for x in my_numbers:
        if x % 2 == 0:
            print('%s is an even number ' % (x))


if __name__ == '__main__':
    my_numbers = [3, 4, 5, 6, 7, 8]
    my_process1 = Process(target=cube, args=('x',))
    my_process2 = Process(target=evenno, args=('x',))
    my_process1.start()
    my_process2.start()
    my_process1.join()
    my_process2.join()
    print ("Done")
