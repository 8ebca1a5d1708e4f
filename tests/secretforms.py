"""The forms in which build scripts pass secrets (issue 25), each with a canary ``{c}``, and ordinary
build commands that must be recorded unchanged. Shared by the unit, property and integration tests."""

from __future__ import annotations

#: form -> a command line holding the canary ``{c}`` (each canary is masked by the rules alone).
FORMS: dict[str, list[str]] = {
    "env-assignments": ["env", "AWS_SECRET_ACCESS_KEY={c}", "GITHUB_TOKEN=ghp_{c}", "cmd"],
    "env-db-password": ["env", "DB_PASSWORD={c}", "MYSQL_PWD={c}", "PGPASSWORD={c}", "true"],
    "url-password-slash": ["psql", "postgres://u:abc/{c}@h/db"],
    "url-password": ["git", "clone", "https://user:{c}@example.org/repo.git"],
    "url-token-user": ["git", "clone", "https://{c}@github.com/o/r.git"],
    "url-query-token": ["curl", "https://api.example.org/x?page=1&access_token={c}"],
    "sh-c-options": ["sh", "-c", "mysql --password={c} -p{c}x --token {c}"],
    "bash-c-login": ["bash", "-c", "sshpass -p '{c}' ssh h && docker login -u me -p {c} r"],
    "sh-c-assignment": ["sh", "-c", "GITHUB_TOKEN={c} make; curl -u a:{c} https://x"],
    "header-bearer": ["curl", "-H", "Authorization: Bearer {c}", "https://x"],
    "header-token-in-script": ["sh", "-c", "curl -H \"Authorization: token ghp_{c}\" https://x"],
    "header-git-extraheader": ["git", "-c", "http.extraHeader=Authorization: Basic {c}", "clone", "x"],
    "header-proxy-authorization": ["curl", "-H", "Proxy-Authorization: Basic {c}", "https://x"],
    "header-x-api-key": ["curl", "-H", "X-API-Key: {c}", "--header", "x-api-key:{c}", "https://x"],
    "header-cookie": ["curl", "-H", "Cookie: session={c}", "https://x"],
    "header-single-quoted": ["sh", "-c", "curl --header 'Authorization: Bearer {c}' https://x"],
    "curl-u": ["curl", "-u", "user:{c}", "https://x"],
    "curl-user": ["curl", "--user", "user:{c}", "https://x"],
    "curl-user-equals": ["curl", "--user=user:{c}", "--proxy-user=p:{c}", "https://x"],
    "sshpass-p": ["sshpass", "-p", "{c}", "ssh", "host"],
    "docker-login-p": ["docker", "login", "-u", "me", "-p", "{c}", "registry.example.org"],
    "docker-login-password": ["docker", "login", "--password", "{c}", "r"],
    "mysql-p-glued": ["mysql", "-p{c}", "db"],
    "mysql-password-equals": ["mysql", "--password={c}", "db"],
    "aws-configure-set": ["aws", "configure", "set", "aws_secret_access_key", "{c}"],
    "npm-config-set": ["npm", "config", "set", "//registry.example.org/:_authToken={c}"],
    "npm-config-set-separate": ["npm", "config", "set", "//registry.example.org/:_authToken", "{c}"],
    "yarn-config-set": ["yarn", "config", "set", "npmAuthToken", "{c}"],
    "option-pw": ["tool", "--pw={c}"],
    "option-access-key": ["tool", "--access-key={c}", "--secret-key", "{c}"],
    "option-key-separate": ["tool", "--key", "{c}"],
    "option-token-separate": ["tool", "--token", "{c}", "--api-key={c}"],
    "option-secret": ["tool", "--secret", "{c}", "--client-secret={c}"],
    "option-password-with-space": ["tool", "--password=two words {c}"],
    "option-quoted-in-script": ["sh", "-c", "tool --token=\"{c}\" --password '{c} x'"],
    "libpq-conninfo": ["psql", "host=h password={c} dbname=db"],
    "libpq-conninfo-in-script": ["sh", "-c", "psql 'host=h password={c} dbname=db'"],
    "mount-options": ["mount", "-o", "username=u,password={c},uid=0", "//srv/share", "/mnt"],
    "wget-http-password": ["wget", "--http-user=u", "--http-password={c}", "https://x"],
    "after-an-ordinary-option": ["tool", "--verbose", "--password", "{c}"],
}

#: Ordinary build commands: recorded exactly as given.
ORDINARY: list[list[str]] = [
    ["gcc", "-pthread", "-pipe", "-O2", "-Wall", "-o", "prog", "prog.c"],
    ["make", "-j2"],
    ["tar", "-p", "-xf", "rootfs.tar"],
    ["ssh", "-p", "22", "builder@host"],
    ["cp", "-p", "a", "b"],
    ["mkdir", "-p", "out/iso/boot"],
    ["install", "-m", "0644", "overlay/etc/x.conf", "/usr/share/x"],
    ["xorriso", "-as", "mkisofs", "-o", "out.iso", "-V", "ASL", "-J", "-R", "-partition_offset", "16",
     "-publisher", "asl", "-padding", "0", "-isohybrid-mbr", "/usr/lib/ISOLINUX/isohdpfx.bin"],
    ["mmdebstrap", "--mode=unshare", "--variant=minbase", "--include=gnupg",
     "--keyring=/usr/share/keyrings/debian-archive-keyring.gpg", "bookworm", "rootfs"],
    ["sh", "-c", "gcc -pthread -pipe x.c && make -j2 && mkdir -p out && tar -p -cf out.tar ."],
    ["gpg", "--keyserver", "hkps://keys.openpgp.org", "--recv-keys", "ABCDEF0123456789"],
    ["ssh", "-o", "StrictHostKeyChecking=no", "-o", "PasswordAuthentication=no", "h"],
    ["git", "commit", "--author=A U Thor <a@example.org>", "-m", "msg"],
    ["asl-admin", "roots", "init", "--keys", "3", "--passphrase-file", "/secure/pass"],
    ["docker", "run", "-p", "8080:80", "image"],
    ["find", ".", "-path", "./x", "-prune", "-o", "-print0"],
    ["apt-get", "install", "-y", "--no-install-recommends", "gnupg"],
    ["git", "clone", "ssh://git@example.org/x.git"],
    ["pipeline/steps/overlay.sh", "/usr/lib/asl-auth-host", "--no-password"],
    ["dpkg-deb", "--build", "pkg", "out/pkg.deb"],
]


def form(name: str, canary: str) -> list[str]:
    """The command line of ``name`` with ``canary`` in place of ``{c}``."""
    return [part.replace("{c}", canary) for part in FORMS[name]]
