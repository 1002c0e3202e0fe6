#!/usr/bin/env python3
# usage: serial.py LOG TIMEOUT -- qemu args...
# Runs qemu, timestamps its serial console into LOG, and stops it a few seconds after a verdict,
# a crash or power-off, or after TIMEOUT seconds. The guest's console lines (forwarded by dom0
# with a "domU| " prefix) never stop a run.
import sys, subprocess, time, os, signal, select
log=sys.argv[1]; tmo=float(sys.argv[2]); args=sys.argv[4:]
# A guest crashing ("Domain N ... crashed on cpu") does not stop the run: dom0's checks see it
# and judge it (netback's responses could be the cause).
stop=[b"SPLITNET-TEST PASS", b"SPLITNET-TEST FAIL", b"SPLITNET-TEST NOVERDICT", b"SPLITNET-TEST PARTIAL", b"DOM0 DONE", b"Hardware Dom0 crashed", b"reboot: Power down", b"Kernel panic"]
t0=time.time()
p=subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
def stopped(sig, _frame):
    # Killed from outside (a CI timeout): take qemu along rather than orphan it.
    if p.poll() is None: p.kill()
    sys.exit(128 + sig)
signal.signal(signal.SIGTERM, stopped); signal.signal(signal.SIGINT, stopped)
f=open(log,'w'); buf=b''; hit=None
os.set_blocking(p.stdout.fileno(), False)
while True:
    r,_,_=select.select([p.stdout],[],[],1.0)
    if r:
        d=p.stdout.read(65536)
        if not d: break
        buf+=d
        while b'\n' in buf:
            line,buf=buf.split(b'\n',1)
            f.write('[%7.2f] %s\n'%(time.time()-t0, line.decode(errors='replace').rstrip('\r'))); f.flush()
            if hit is None and not line.startswith(b'domU| ') and any(s in line for s in stop): hit=(line, time.time())
    if hit and time.time()-hit[1]>3: break
    if time.time()-t0>tmo: f.write('[TIMEOUT]\n'); break
    if p.poll() is not None and not r: break
if p.poll() is None:
    p.send_signal(signal.SIGTERM); time.sleep(1)
    if p.poll() is None: p.kill()
f.write('[END %.2f rc=%s]\n'%(time.time()-t0, p.poll())); f.close()
print('elapsed %.2f'%(time.time()-t0))
