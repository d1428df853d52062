package io.otarollout.broker;

import java.security.GeneralSecurityException;
import java.security.cert.CertPathValidator;
import java.security.cert.CertPathValidatorException;
import java.security.cert.CertificateFactory;
import java.security.cert.CertificateParsingException;
import java.security.cert.PKIXParameters;
import java.security.cert.TrustAnchor;
import java.security.cert.X509Certificate;
import java.util.ArrayList;
import java.util.Collection;
import java.util.Date;
import java.util.List;
import java.util.Set;
import javax.naming.InvalidNameException;
import javax.naming.ldap.LdapName;
import javax.naming.ldap.Rdn;

/**
 * X.509 device authentication, the certificate half (IoTDA's "X.509 certificate" devices):
 * the chain the device presented in the TLS handshake must lead to one of the operator's
 * registered device CAs, be valid at the given time, allow client authentication, and name
 * the device: the leaf's subject CN, or one of its DNS, e-mail or URI subject alternative
 * names, equals the device id exactly. Pure: the chain, the anchors and the time come in,
 * a decision goes out; no revocation lists are fetched (a revoked device is disabled or
 * deleted in the control plane instead).
 */
final class DeviceCertificate {
    private static final String CLIENT_AUTH = "1.3.6.1.5.5.7.3.2";
    private static final String ANY_USAGE = "2.5.29.37.0";
    // GeneralName tags holding a string: rfc822Name, dNSName, uniformResourceIdentifier.
    private static final Set<Integer> STRING_NAMES = Set.of(1, 2, 6);

    private DeviceCertificate() {}

    /** OK, or why the certificate does not authenticate {@code deviceId}; {@code detail}
     * says for the log what failed (never key material). */
    static AuthDecision check(X509Certificate[] chain, String deviceId, Set<TrustAnchor> anchors, Date at) {
        if (chain == null || chain.length == 0) {
            return AuthDecision.refuse(Reason.CERTIFICATE_REQUIRED);
        }
        AuthDecision trusted = verifyChain(chain, anchors, at);
        if (!trusted.allowed()) {
            return trusted;
        }
        X509Certificate leaf = chain[0];
        if (!names(leaf).contains(deviceId)) {
            return new AuthDecision(Reason.CERTIFICATE_MISMATCH, "",
                    "the certificate names " + names(leaf) + ", not the device");
        }
        return AuthDecision.allow(deviceId);
    }

    /** The chain half alone (http mode sends its outcome to the control plane, which matches
     * the names): OK with no device id when a non-empty {@code chain} leads to one of
     * {@code anchors}, is valid at {@code at} and allows client authentication; else
     * CERTIFICATE_UNTRUSTED or CERTIFICATE_EXPIRED with the cause in {@code detail}. */
    static AuthDecision verifyChain(X509Certificate[] chain, Set<TrustAnchor> anchors, Date at) {
        if (anchors.isEmpty()) {
            return new AuthDecision(Reason.CERTIFICATE_UNTRUSTED, "", "no device CA is registered");
        }
        try {
            validate(chain, anchors, at);
        } catch (CertPathValidatorException e) {
            CertPathValidatorException.Reason why = e.getReason();
            Reason reason = why == CertPathValidatorException.BasicReason.EXPIRED
                    || why == CertPathValidatorException.BasicReason.NOT_YET_VALID
                    ? Reason.CERTIFICATE_EXPIRED : Reason.CERTIFICATE_UNTRUSTED;
            return new AuthDecision(reason, "", String.valueOf(e.getMessage()));
        } catch (GeneralSecurityException | IllegalArgumentException e) {
            return new AuthDecision(Reason.CERTIFICATE_UNTRUSTED, "", e.getClass().getSimpleName()
                    + ": " + e.getMessage());
        }
        if (!allowsClientAuth(chain[0])) {
            return new AuthDecision(Reason.CERTIFICATE_UNTRUSTED, "", "the certificate's extended key "
                    + "usage does not allow client authentication");
        }
        return new AuthDecision(Reason.OK, "", "");
    }

    /** PKIX validation without revocation checks. The anchor itself, when the device sent it
     * along, is left out of the path (a path never contains its anchor). */
    private static void validate(X509Certificate[] chain, Set<TrustAnchor> anchors, Date at)
            throws GeneralSecurityException {
        List<X509Certificate> path = new ArrayList<>(List.of(chain));
        while (path.size() > 1 && isAnchor(path.get(path.size() - 1), anchors)) {
            path.remove(path.size() - 1);
        }
        PKIXParameters parameters = new PKIXParameters(anchors);
        parameters.setRevocationEnabled(false);
        parameters.setDate(at);
        CertPathValidator.getInstance("PKIX").validate(
                CertificateFactory.getInstance("X.509").generateCertPath(path), parameters);
    }

    private static boolean isAnchor(X509Certificate cert, Set<TrustAnchor> anchors) {
        for (TrustAnchor anchor : anchors) {
            if (cert.equals(anchor.getTrustedCert())) {
                return true;
            }
        }
        return false;
    }

    static boolean allowsClientAuth(X509Certificate leaf) {
        try {
            List<String> usages = leaf.getExtendedKeyUsage();
            return usages == null || usages.contains(CLIENT_AUTH) || usages.contains(ANY_USAGE);
        } catch (CertificateParsingException e) {
            return false;
        }
    }

    /** The names a certificate gives its subject: every CN, then the string SANs. */
    static List<String> names(X509Certificate leaf) {
        List<String> names = new ArrayList<>(commonNames(leaf));
        try {
            Collection<List<?>> alternatives = leaf.getSubjectAlternativeNames();
            if (alternatives != null) {
                for (List<?> entry : alternatives) {
                    if (entry.size() == 2 && STRING_NAMES.contains(entry.get(0)) && entry.get(1) instanceof String name) {
                        names.add(name);
                    }
                }
            }
        } catch (CertificateParsingException e) {
            // Unreadable SANs name nobody.
        }
        return names;
    }

    /** The subject's CNs, in the certificate's (DER) order: LdapName lists the RDNs so. */
    static List<String> commonNames(X509Certificate leaf) {
        List<String> names = new ArrayList<>();
        try {
            for (Rdn rdn : new LdapName(leaf.getSubjectX500Principal().getName()).getRdns()) {
                if ("CN".equalsIgnoreCase(rdn.getType()) && rdn.getValue() instanceof String cn) {
                    names.add(cn);
                }
            }
        } catch (InvalidNameException e) {
            // A subject the JDK wrote but cannot read back: no CN, the SANs may still name it.
        }
        return names;
    }
}
