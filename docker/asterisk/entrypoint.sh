#!/usr/bin/env bash
# Render the environment-dependent bits of the Asterisk config, then run Asterisk in the
# foreground.
#   AST_NODE_NAME   node name (User-Agent, dialplan ${NODE_NAME}); default: hostname
#   KAMAILIO_ADDR   Kamailio's SIP ip:port, where calls to users go (a proxy pair's floating
#                   address)
#   KAMAILIO_SOURCES  the ip:port requests from Kamailio come from, comma-separated (each proxy
#                   of a pair); INVITEs from exactly there are trusted. Default: KAMAILIO_ADDR
#   DB_HOST DB_PORT DB_NAME DB_USER DB_PASSWORD   shared realtime database
#   REGMIRROR_ADDRS   regmirror instances' IPs, comma-separated: with Kamailio's, the only
#                     sources this node takes SIP from (pjsip_acl.conf), and AMI's default permit
#   AMI_USER AMI_SECRET AMI_PERMIT   the AMI account regmirror audits with (manager.conf)
#   METRICS_USER METRICS_SECRET   optional: res_prometheus's /metrics on port 8088 behind basic
#                   auth (http.conf, prometheus.conf); unset = no HTTP server at all
# DB_PASSWORD and AMI_SECRET are required, also as *_FILE (a file holding the secret). The demo
# values of the compose stack are refused unless ALLOW_DEMO_SECRETS=yes.
set -euo pipefail
die() { echo "asterisk entrypoint: $*" >&2; exit 1; }
# VAR from the environment or from the file named by VAR_FILE.
secret() {
    local name=$1 file_var="${1}_FILE"
    if [ -n "${!file_var:-}" ]; then
        [ -r "${!file_var}" ] || die "$file_var: cannot read ${!file_var}"
        printf -v "$name" '%s' "$(cat "${!file_var}")"
    fi
    [ -n "${!name:-}" ] || die "$name (or $file_var) is required"
    case "${!name}" in
        regmirror-ami-demo|asterisk-demo|regmirror-metrics-demo)
            [ "${ALLOW_DEMO_SECRETS:-}" = yes ] \
                || die "$name is the published demo secret; set your own (ALLOW_DEMO_SECRETS=yes only for the demo stack)" ;;
    esac
}
: "${AST_NODE_NAME:=$(hostname)}"
: "${KAMAILIO_ADDR:=10.77.0.20:5060}" "${KAMAILIO_SOURCES:=$KAMAILIO_ADDR}"
IFS=, read -r -a kamailio_sources <<< "$KAMAILIO_SOURCES"
: "${DB_HOST:=mariadb}" "${DB_PORT:=3306}" "${DB_NAME:=regmirror}" "${DB_USER:=asterisk}"
: "${AMI_USER:=regmirror}"
[ -n "${REGMIRROR_ADDRS:-}" ] || die "REGMIRROR_ADDRS (the regmirror instances' IPs) is required"
secret DB_PASSWORD
secret AMI_SECRET
IFS=, read -r -a regmirror_ips <<< "$REGMIRROR_ADDRS"
: "${AMI_PERMIT:=$REGMIRROR_ADDRS}"
IFS=, read -r -a ami_permits <<< "$AMI_PERMIT"
export AST_NODE_NAME

etc=/etc/asterisk
cat > "$etc/pjsip_node.conf" <<CONF
user_agent = Asterisk ($AST_NODE_NAME)
CONF
cat > "$etc/pjsip_kamailio.conf" <<CONF
[kamailio]
type = aor
contact = sip:$KAMAILIO_ADDR

[kamailio]
type = identify
endpoint = kamailio
$(printf 'match = %s\n' "${kamailio_sources[@]}")
CONF
# `deny` everything, then one `permit` per address or network (a bare address is one host).
deny_all_but() {
    local net
    echo "deny = 0.0.0.0/0.0.0.0"
    for net in "$@"; do
        net=${net// /}
        [[ $net == */* ]] || net="$net/255.255.255.255"
        echo "permit = $net"
    done
}
# Kamailio and regmirror are the only SIP peers a node has: phones reach it through Kamailio.
{
    echo "[farm-only]"
    echo "type = acl"
    deny_all_but "${kamailio_sources[@]%:*}" "${regmirror_ips[@]}"
} > "$etc/pjsip_acl.conf"
# The named ACL users' endpoints reference (ps_endpoints.acl, default 'regmirror'): their
# requests come from regmirror only.
{
    echo "[regmirror]"
    deny_all_but "${regmirror_ips[@]}"
} > "$etc/acl.conf"
(umask 077; cat > "$etc/res_odbc_credentials.conf" <<CONF
username => $DB_USER
password => $DB_PASSWORD
CONF
)
# PJSIPShowContacts is a `system` read; DBDel (removing a deleted user's contact) a `system` write.
(umask 077; {
    echo "[$AMI_USER]"
    echo "secret = $AMI_SECRET"
    echo "read = system"
    echo "write = system"
    deny_all_but 127.0.0.1 "${ami_permits[@]}"
} > "$etc/manager_users.conf")
if [ -n "${METRICS_SECRET:-}${METRICS_SECRET_FILE:-}" ]; then
    secret METRICS_SECRET
    cat > "$etc/http.conf" <<CONF
[general]
enabled = yes
bindaddr = 0.0.0.0
bindport = 8088
CONF
    (umask 077; cat > "$etc/prometheus.conf" <<CONF
[general]
enabled = yes
uri = metrics
core_metrics_enabled = yes
auth_username = ${METRICS_USER:-prometheus}
auth_password = $METRICS_SECRET
auth_realm = asterisk
CONF
)
fi
sed -i -e "s/^SERVER = .*/SERVER = $DB_HOST/" -e "s/^PORT = .*/PORT = $DB_PORT/" \
       -e "s/^DATABASE = .*/DATABASE = $DB_NAME/" /etc/odbc.ini
chown asterisk:asterisk "$etc"/*.conf

# Debian's package does not ship the run directory; without it `asterisk -rx` cannot connect.
mkdir -p /var/run/asterisk
chown asterisk:asterisk /var/run/asterisk

exec /usr/sbin/asterisk -f -n -U asterisk -G asterisk "$@"
