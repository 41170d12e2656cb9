#!/bin/sh
# The admission webhook's certificate without cert-manager, once: a CA and a server certificate
# for regpin-admission.regpin.svc (openssl), the Secret regpin-admission-tls, and the CA as the
# webhook's caBundle. Run it after `kubectl apply -k` of a stack with components/admission, with
# kubectl pointed at the cluster. Re-run it to rotate (the certificate lasts DAYS, default 825).
#   sh deploy/kubernetes/components/admission/make-cert.sh [NAMESPACE] [DAYS]
set -eu
ns="${1:-regpin}"
days="${2:-825}"
name="regpin-admission.$ns.svc"
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT

openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days "$days" -subj "/CN=regpin-admission-ca" \
    -keyout "$dir/ca.key" -out "$dir/ca.crt" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    2>/dev/null
openssl req -newkey rsa:2048 -nodes -sha256 -subj "/CN=$name" \
    -keyout "$dir/tls.key" -out "$dir/tls.csr" 2>/dev/null
printf 'subjectAltName=DNS:%s,DNS:regpin-admission.%s\nextendedKeyUsage=serverAuth\n' "$name" "$ns" \
    > "$dir/ext"
openssl x509 -req -sha256 -days "$days" -in "$dir/tls.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" \
    -set_serial "0x$(openssl rand -hex 8)" -extfile "$dir/ext" -out "$dir/tls.crt" 2>/dev/null

kubectl -n "$ns" create secret tls regpin-admission-tls --cert="$dir/tls.crt" --key="$dir/tls.key" \
    --dry-run=client -o yaml | kubectl apply -f -
ca=$(base64 < "$dir/ca.crt" | tr -d '\n')
kubectl patch mutatingwebhookconfiguration regpin --type=json \
    -p "[{\"op\":\"add\",\"path\":\"/webhooks/0/clientConfig/caBundle\",\"value\":\"$ca\"}]"
# regpin reads its certificate at start: restart it to use the new one.
kubectl -n "$ns" rollout restart statefulset/regpin
echo "regpin-admission-tls and the webhook's caBundle are set (valid $days days)"
