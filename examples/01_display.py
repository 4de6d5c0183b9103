"""The tutorial's first program: start one process and join it.

Expected output:
Hi !! I am Python
"""

from proctor import Process


def display():
    print ('Hi !! I am Python')


if __name__ == '__main__':
    p = Process(target=display)
    p.start()
    p.join()
