package io.otarollout.broker;

import java.security.cert.CertificateEncodingException;
import java.security.cert.TrustAnchor;
import java.security.cert.X509Certificate;
import java.util.Date;
import java.util.List;
import java.util.Set;

/**
 * http mode's account of the client certificate a device presented, for the control plane to
 * decide on (EMQX's HTTP authentication passes {@code ${cert_common_name}} and
 * {@code ${cert_subject}} the same way). The broker does what only it can: it holds the chain,
 * so it checks it ({@link DeviceCertificate#verifyChain}: a registered device CA, validity,
 * client-auth usage) and sends the verdict, {@code check}; the control plane, which holds the
 * device's record, decides whether the certificate counts and whether it names the device.
 * No PEM is sent: the control plane never re-checks the chain.
 *
 * @param commonName  the subject's first CN ("" if none), EMQX's cert_common_name
 * @param subject     the subject, RFC 2253, EMQX's cert_subject
 * @param names       every name the certificate gives its subject (the CNs, then the DNS,
 *                    e-mail and URI SANs): the device id must be one of them
 * @param fingerprint lowercase hex SHA-256 of the leaf's DER, for the control plane's log
 * @param check       OK, CERTIFICATE_UNTRUSTED or CERTIFICATE_EXPIRED
 */
record CertificateFacts(String commonName, String subject, List<String> names, String fingerprint, Reason check) {
    /** The facts of a non-empty {@code chain} (leaf first), checked against {@code anchors} at
     * {@code at}. Pure. */
    static CertificateFacts of(X509Certificate[] chain, Set<TrustAnchor> anchors, Date at) {
        X509Certificate leaf = chain[0];
        List<String> commonNames = DeviceCertificate.commonNames(leaf);
        return new CertificateFacts(
                commonNames.isEmpty() ? "" : commonNames.get(0),
                leaf.getSubjectX500Principal().getName(),
                List.copyOf(DeviceCertificate.names(leaf)),
                fingerprint(leaf),
                DeviceCertificate.verifyChain(chain, anchors, at).reason());
    }

    private static String fingerprint(X509Certificate leaf) {
        try {
            return DeviceCas.fingerprint(leaf);
        } catch (CertificateEncodingException e) {
            return ""; // a certificate the handshake parsed re-encodes; the log can do without
        }
    }
}
