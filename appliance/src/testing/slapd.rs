//! A real OpenLDAP `slapd` (Debian's package, installed by the README's set-up) for the
//! directory tests, here and in the QEMU tests: started on a loopback port with an `ldaps`
//! listener whose certificate a test CA signed, seeded with users and groups, killed when
//! dropped. A test harness: it panics, naming why, when slapd is missing or does not start.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::api::directory::{DirectoryConfig, DirectoryKind, GroupMapping};
use crate::model::AccountRole;

pub const SUFFIX: &str = "dc=studio,dc=test";
pub const SERVICE_DN: &str = "cn=appliance,dc=studio,dc=test";
pub const SERVICE_PASSWORD: &str = "service-Password-1";

/// One slapd of this test's own, killed when dropped.
#[derive(Debug)]
pub struct Slapd {
    child: Child,
    pub port: u16,
    pub ca_pem: String,
}

/// A CA and a certificate for 127.0.0.1 that it signed: (CA PEM, certificate PEM, key PEM).
pub fn test_pki() -> (String, String, String) {
    pki_for(&["127.0.0.1"])
}

/// A CA and a certificate for `names` (host names or IP addresses) that it signed.
pub fn pki_for(names: &[&str]) -> (String, String, String) {
    let ca_key = rcgen::KeyPair::generate().expect("CA key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "directory test CA");
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).expect("CA");
    let key = rcgen::KeyPair::generate().expect("key");
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let params = rcgen::CertificateParams::new(names).expect("params");
    let cert = params.signed_by(&key, &ca).expect("certificate");
    (ca.pem(), cert.pem(), key.serialize_pem())
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

fn entry(dn: &str, lines: &[&str]) -> String {
    format!("dn: {dn}\n{}\n\n", lines.join("\n"))
}

fn user(uid: &str, password: &str) -> String {
    entry(
        &format!("uid={uid},ou=people,{SUFFIX}"),
        &[
            "objectClass: inetOrgPerson",
            &format!("uid: {uid}"),
            &format!("cn: {uid}"),
            "sn: test",
            &format!("userPassword: {password}"),
        ],
    )
}

fn group(cn: &str, members: &[&str]) -> String {
    let mut lines = vec!["objectClass: groupOfNames".to_string(), format!("cn: {cn}")];
    lines.extend(
        members
            .iter()
            .map(|m| format!("member: uid={m},ou=people,{SUFFIX}")),
    );
    let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
    entry(&format!("cn={cn},ou=groups,{SUFFIX}"), &lines)
}

impl Slapd {
    /// Listening on 127.0.0.1, its certificate for 127.0.0.1.
    pub fn start(dir: &Path) -> Slapd {
        Slapd::start_for(dir, &["127.0.0.1"])
    }

    /// Listening on 127.0.0.1, its certificate for `names` (a QEMU guest reaches the host's
    /// loopback as 10.0.2.2).
    pub fn start_for(dir: &Path, names: &[&str]) -> Slapd {
        let slapd = tool("slapd");
        let (ca_pem, cert_pem, key_pem) = pki_for(names);
        for (name, text) in [
            ("ca.pem", &ca_pem),
            ("server.pem", &cert_pem),
            ("server.key", &key_pem),
        ] {
            std::fs::write(dir.join(name), text).expect("write the PKI");
        }
        std::fs::create_dir_all(dir.join("db")).expect("db dir");
        let d = dir.display();
        let schema = "/etc/ldap/schema";
        let conf = format!(
            "include {schema}/core.schema\ninclude {schema}/cosine.schema\n\
             include {schema}/inetorgperson.schema\ninclude {schema}/nis.schema\n\
             modulepath /usr/lib/ldap\nmoduleload back_mdb\n\
             pidfile {d}/slapd.pid\nargsfile {d}/slapd.args\n\
             TLSCACertificateFile {d}/ca.pem\nTLSCertificateFile {d}/server.pem\n\
             TLSCertificateKeyFile {d}/server.key\n\
             database mdb\nmaxsize 10485760\nsuffix \"{SUFFIX}\"\n\
             rootdn \"cn=root,{SUFFIX}\"\nrootpw root-Password-1\ndirectory {d}/db\n"
        );
        std::fs::write(dir.join("slapd.conf"), conf).expect("slapd.conf");
        let mut seed = entry(
            SUFFIX,
            &[
                "objectClass: dcObject",
                "objectClass: organization",
                "o: studio",
                "dc: studio",
            ],
        );
        seed += &entry(
            SERVICE_DN,
            &[
                "objectClass: simpleSecurityObject",
                "objectClass: organizationalRole",
                "cn: appliance",
                &format!("userPassword: {SERVICE_PASSWORD}"),
            ],
        );
        seed += &entry(
            &format!("ou=people,{SUFFIX}"),
            &["objectClass: organizationalUnit", "ou: people"],
        );
        seed += &entry(
            &format!("ou=groups,{SUFFIX}"),
            &["objectClass: organizationalUnit", "ou: groups"],
        );
        for (uid, password) in [
            ("ana", "ana-Password-1"),
            ("ola", "ola-Password-1"),
            ("tia", "tia-Password-1"),
            ("nog", "nog-Password-1"),
        ] {
            seed += &user(uid, password);
        }
        // max is in no groupOfNames; its own entry names its group (seeAlso, a DN attribute
        // as Active Directory's memberOf is).
        seed += &entry(
            &format!("uid=max,ou=people,{SUFFIX}"),
            &[
                "objectClass: inetOrgPerson",
                "uid: max",
                "cn: max",
                "sn: test",
                "userPassword: max-Password-1",
                &format!("seeAlso: cn=show-a-artists,ou=groups,{SUFFIX}"),
            ],
        );
        seed += &group("appliance-admins", &["ana"]);
        seed += &group("appliance-readonly", &["ola"]);
        seed += &group("show-a-artists", &["tia"]);
        seed += &group("canteen", &["nog", "ana"]);
        std::fs::write(dir.join("seed.ldif"), seed).expect("seed");
        let slapadd = slapd.with_file_name("slapadd");
        let added = Command::new(&slapadd)
            .arg("-f")
            .arg(dir.join("slapd.conf"))
            .arg("-l")
            .arg(dir.join("seed.ldif"))
            .output()
            .expect("run slapadd");
        assert!(
            added.status.success(),
            "slapadd: {}",
            String::from_utf8_lossy(&added.stderr)
        );
        let port = free_port();
        let child = Command::new(&slapd)
            .arg("-f")
            .arg(dir.join("slapd.conf"))
            .arg("-h")
            .arg(format!("ldaps://127.0.0.1:{port}/"))
            .args(["-d", "0"])
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(dir.join("slapd.log")).expect("log"),
            ))
            .spawn()
            .expect("start slapd");
        let mut slapd = Slapd {
            child,
            port,
            ca_pem,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "slapd did not listen: {}",
                log(dir)
            );
            if let Ok(Some(status)) = slapd.child.try_wait() {
                panic!("slapd exited {status}: {}", log(dir));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        slapd
    }

    pub fn config(&self) -> DirectoryConfig {
        DirectoryConfig {
            kind: DirectoryKind::Ldap,
            uri: format!("ldaps://127.0.0.1:{}", self.port),
            starttls: false,
            allow_plain: false,
            ca_pem: self.ca_pem.clone(),
            bind_dn: SERVICE_DN.into(),
            bind_password: SERVICE_PASSWORD.into(),
            base: SUFFIX.into(),
            user_attribute: "uid".into(),
            groups_attribute: None,
            group_name_attribute: "cn".into(),
            mappings: vec![
                GroupMapping {
                    group: "appliance-admins".into(),
                    role: AccountRole::Administrator,
                    tenant: None,
                },
                GroupMapping {
                    group: format!("cn=appliance-readonly,ou=groups,{SUFFIX}"),
                    role: AccountRole::ReadOnly,
                    tenant: None,
                },
                GroupMapping {
                    group: "show-a-artists".into(),
                    role: AccountRole::Operator,
                    tenant: Some("show-a".into()),
                },
            ],
            timeout_ms: 2_000,
        }
    }

    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Slapd {
    fn drop(&mut self) {
        self.stop();
    }
}

fn log(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("slapd.log")).unwrap_or_default()
}

/// Debian puts slapd in /usr/sbin; the set-up installs it.
fn tool(name: &str) -> PathBuf {
    ["/usr/sbin", "/usr/bin", "/sbin"]
        .iter()
        .map(|dir| Path::new(dir).join(name))
        .find(|p| p.exists())
        .unwrap_or_else(|| panic!("{name} is not installed: run `cargo run --release -p qemu -- setup` (the README's set-up installs Debian's slapd)"))
}
