"""The tutorial's Lock program: four processes print one at a time, never joined.

proctor joins the children at exit, so every line is printed.

Expected output (any order):
Hi Aadrika
Hi Adwaita
Hi Sakya
Hi Sanj
"""

from proctor import Process, Lock


def dispmay_name(l, i):
    l.acquire()
    print ('Hi', i)
    l.release()


if __name__ == '__main__':
    my_lock = Lock()
    my_name = ['Aadrika', 'Adwaita', 'Sakya', 'Sanj']
    for name in my_name:
        Process(target=dispmay_name, args=(my_lock,name)).start()
