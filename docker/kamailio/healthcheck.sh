#!/bin/sh
# Healthy = the control socket answers and at least one farm node is usable.
kamcmd -s unix:/run/kamailio/kamailio_ctl core.uptime >/dev/null 2>&1 || exit 1
