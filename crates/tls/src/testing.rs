//! A throwaway certificate authority for tests (feature `testing`): a CA, a server certificate
//! for `localhost` and `127.0.0.1` signed by it, and client certificates, written as PEM files
//! into a directory of the test's choosing.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair,
};

use crate::Identity;

/// A CA whose certificate is in [`TestCa::ca_file`].
pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
    dir: PathBuf,
    name: String,
}

impl TestCa {
    /// A new CA named `name`, its certificate written to `dir/{name}-ca.pem`.
    pub fn new(dir: &Path, name: &str) -> TestCa {
        std::fs::create_dir_all(dir).expect("create the certificate directory");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, format!("fleetscore test CA {name}"));
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().expect("CA key"))
            .expect("self-sign the CA");
        let ca = TestCa {
            issuer,
            dir: dir.to_path_buf(),
            name: name.to_string(),
        };
        std::fs::write(ca.ca_file(), ca.issuer.pem()).expect("write the CA certificate");
        ca
    }

    /// The CA certificate (PEM).
    pub fn ca_file(&self) -> PathBuf {
        self.dir.join(format!("{}-ca.pem", self.name))
    }

    /// A server certificate for `names` (DNS names or IP addresses), written as
    /// `{name}-{leaf}.pem` and `{name}-{leaf}.key`.
    pub fn server(&self, leaf: &str, names: &[&str]) -> Identity {
        self.leaf(
            leaf,
            names,
            ExtendedKeyUsagePurpose::ServerAuth,
            names.first().copied().unwrap_or(leaf),
        )
    }

    /// The usual server: `localhost` and `127.0.0.1`.
    pub fn localhost(&self) -> Identity {
        self.server("server", &["localhost", "127.0.0.1"])
    }

    /// A client certificate whose common name is `common_name`.
    pub fn client(&self, common_name: &str) -> Identity {
        self.leaf(
            &format!("client-{common_name}"),
            &[],
            ExtendedKeyUsagePurpose::ClientAuth,
            common_name,
        )
    }

    fn leaf(
        &self,
        leaf: &str,
        names: &[&str],
        usage: ExtendedKeyUsagePurpose,
        common_name: &str,
    ) -> Identity {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let mut params = CertificateParams::new(names).expect("leaf parameters");
        params.extended_key_usages = vec![usage];
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        let key = KeyPair::generate().expect("leaf key");
        let cert = params.signed_by(&key, &self.issuer).expect("sign the leaf");
        let identity = Identity {
            cert: self.dir.join(format!("{}-{leaf}.pem", self.name)),
            key: self.dir.join(format!("{}-{leaf}.key", self.name)),
        };
        std::fs::write(&identity.cert, cert.pem()).expect("write the certificate");
        std::fs::write(&identity.key, key.serialize_pem()).expect("write the key");
        identity
    }
}
