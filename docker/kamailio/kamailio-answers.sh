#!/bin/sh
# keepalived's check: this proxy's Kamailio answers on its control socket.
exec kamcmd -s unix:/run/kamailio/kamailio_ctl core.uptime >/dev/null 2>&1
