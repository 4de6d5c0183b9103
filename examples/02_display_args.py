"""The tutorial's second program: pass arguments with ``args``.

Expected output:
Hi !!! Python
"""

from proctor import Process


def display(my_name):
    print ('Hi !!!' + " " + my_name)


if __name__ == '__main__':
    p = Process(target=display, args=('Python',))
    p.start()
    p.join()
