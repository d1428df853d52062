package io.otarollout.broker;

import java.io.ByteArrayInputStream;
import java.nio.charset.StandardCharsets;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.security.cert.Certificate;
import java.security.cert.CertificateEncodingException;
import java.security.cert.CertificateException;
import java.security.cert.CertificateFactory;
import java.security.cert.TrustAnchor;
import java.security.cert.X509Certificate;
import java.util.ArrayList;
import java.util.Collection;
import java.util.HashSet;
import java.util.HexFormat;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeMap;

/**
 * The operator's registered device CAs, as the extension currently knows them: the Redis
 * hash {@code ota:sched:device-cas} written by the control plane (scheduler/device_cas.py),
 * field = lowercase hex SHA-256 of the certificate's DER, value = its PEM. {@link #parse} is
 * pure; the holder is swapped whole by {@link DeviceCaSync}, read by every certificate check.
 */
final class DeviceCas {
    /** What a hash parsed to: the CAs by fingerprint, and the entries that were refused. */
    record Parsed(Map<String, X509Certificate> cas, List<String> problems) {
        Set<TrustAnchor> anchors() {
            Set<TrustAnchor> anchors = new HashSet<>();
            for (X509Certificate ca : cas.values()) {
                anchors.add(new TrustAnchor(ca, null));
            }
            return Set.copyOf(anchors);
        }
    }

    /** The CAs and their anchors, swapped together. */
    private record Current(Map<String, X509Certificate> cas, Set<TrustAnchor> anchors) {}

    private volatile Current current = new Current(Map.of(), Set.of());

    Set<TrustAnchor> anchors() {
        return current.anchors();
    }

    Map<String, X509Certificate> cas() {
        return current.cas();
    }

    /** Replaces the set; true when the fingerprints changed. */
    boolean replace(Parsed next) {
        boolean changed = !next.cas().keySet().equals(current.cas().keySet());
        current = new Current(next.cas(), next.anchors());
        return changed;
    }

    /** Entries whose value is not one PEM certificate that may sign (a CA: basic constraints
     * with cA true), or whose field is not that certificate's fingerprint, are refused. */
    static Parsed parse(Map<String, String> entries) {
        Map<String, X509Certificate> cas = new TreeMap<>();
        List<String> problems = new ArrayList<>();
        for (Map.Entry<String, String> entry : new TreeMap<>(entries).entrySet()) {
            String field = entry.getKey();
            try {
                Collection<? extends Certificate> certs = CertificateFactory.getInstance("X.509")
                        .generateCertificates(new ByteArrayInputStream(entry.getValue().getBytes(StandardCharsets.US_ASCII)));
                if (certs.size() != 1 || !(certs.iterator().next() instanceof X509Certificate ca)) {
                    problems.add(field + ": not exactly one X.509 certificate");
                    continue;
                }
                if (ca.getBasicConstraints() < 0) {
                    problems.add(field + ": not a CA certificate (basic constraints)");
                    continue;
                }
                if (!fingerprint(ca).equals(field)) {
                    problems.add(field + ": the field is not the certificate's SHA-256");
                    continue;
                }
                cas.put(field, ca);
            } catch (CertificateException e) {
                problems.add(field + ": " + e.getMessage());
            }
        }
        return new Parsed(Map.copyOf(cas), List.copyOf(problems));
    }

    static String fingerprint(X509Certificate cert) throws CertificateEncodingException {
        try {
            return HexFormat.of().formatHex(MessageDigest.getInstance("SHA-256").digest(cert.getEncoded()));
        } catch (NoSuchAlgorithmException e) {
            throw new IllegalStateException("every JDK has SHA-256", e);
        }
    }
}
