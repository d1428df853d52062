package io.otarollout.broker;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.io.InputStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.KeyStore;
import java.security.cert.CertificateFactory;
import java.security.cert.TrustAnchor;
import java.security.cert.X509Certificate;
import java.util.Date;
import java.util.List;
import java.util.Map;
import java.util.Set;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

/**
 * Certificate devices: the pure match (chain to a registered CA, dates, usage, CN/SAN = device
 * id), the record's method, the registered-CA parsing and the truststore. The certificates are
 * src/test/resources/device-certs, made by tests/vectors/make_device_cert_vectors.py.
 */
class DeviceCertificateTest {
    private static final Date NOW = new Date(1_796_000_000_000L); // 2026-11
    private static final Set<TrustAnchor> FLEET_CA = Set.of(new TrustAnchor(cert("ca")[0], null));
    private static final IotdaCheck.Parsed DEV_1 = IotdaCheck.parse("dev-1_0_0_2026120512");
    private static final SecretBox NO_KEYS = new SecretBox(CredentialKeys.parse(CredentialKeys.DEV));

    static X509Certificate[] cert(String name) {
        try (InputStream in = DeviceCertificateTest.class.getResourceAsStream("/device-certs/" + name + ".pem")) {
            return CertificateFactory.getInstance("X.509").generateCertificates(in)
                    .toArray(new X509Certificate[0]);
        } catch (IOException | java.security.GeneralSecurityException e) {
            throw new IllegalStateException(name, e);
        }
    }

    static String pem(String name) {
        try (InputStream in = DeviceCertificateTest.class.getResourceAsStream("/device-certs/" + name + ".pem")) {
            return new String(in.readAllBytes(), StandardCharsets.US_ASCII);
        } catch (IOException e) {
            throw new IllegalStateException(name, e);
        }
    }

    @ParameterizedTest
    @CsvSource({
        "dev-1, ok",
        "dev-1-san, ok",
        "dev-1-via-intermediate, ok",
        "dev-1-with-root, ok",
        "dev-2, certificate_mismatch",
        "dev-1-prefix, certificate_mismatch",
        "dev-1-other-ca, certificate_untrusted",
        "dev-1-expired, certificate_expired",
        "dev-1-server-only, certificate_untrusted",
        "intermediate, certificate_mismatch",
    })
    void decidesByChainAndName(String file, String reason) {
        AuthDecision decision = DeviceCertificate.check(cert(file), "dev-1", FLEET_CA, NOW);
        assertEquals(reason, decision.reason().code(), decision.detail());
        assertEquals(reason.equals("ok") ? "dev-1" : "", decision.deviceId());
    }

    @Test
    void anIntermediateWithoutItsChainIsNotTrusted() {
        X509Certificate leaf = cert("dev-1-via-intermediate")[0];
        AuthDecision decision = DeviceCertificate.check(new X509Certificate[] {leaf}, "dev-1", FLEET_CA, NOW);
        assertEquals(Reason.CERTIFICATE_UNTRUSTED, decision.reason());
    }

    @Test
    void noChainOrNoCaRefuses() {
        assertEquals(Reason.CERTIFICATE_REQUIRED, DeviceCertificate.check(null, "dev-1", FLEET_CA, NOW).reason());
        assertEquals(Reason.CERTIFICATE_REQUIRED,
                DeviceCertificate.check(new X509Certificate[0], "dev-1", FLEET_CA, NOW).reason());
        AuthDecision none = DeviceCertificate.check(cert("dev-1"), "dev-1", Set.of(), NOW);
        assertEquals(Reason.CERTIFICATE_UNTRUSTED, none.reason());
        assertTrue(none.detail().contains("no device CA"), none.detail());
    }

    @Test
    void namesAreTheCnAndStringSans() {
        assertEquals(List.of("Fleet unit 7", "unit-7.example", "dev-1"), DeviceCertificate.names(cert("dev-1-san")[0]));
        assertTrue(DeviceCertificate.allowsClientAuth(cert("dev-1")[0]));
        assertFalse(DeviceCertificate.allowsClientAuth(cert("dev-1-server-only")[0]));
    }

    @ParameterizedTest
    @CsvSource(nullValues = "null", value = {
        // auth, on, certificate presented, expected
        "certificate, 1, true, ok",
        "certificate, 1, false, certificate_required",
        "certificate, 0, true, disabled",
        "any, 1, true, ok",
        "any, 1, false, unknown_device", // no secret stored: the password path finds none
        "null, 1, true, unknown_device", // secret-only: the certificate is ignored
        "secret, 1, true, unknown_device",
        "something-new, 1, true, unknown_device",
    })
    void theRecordSaysWhichProofCounts(String auth, String on, boolean presented, String expected) {
        CredentialCheck check = new CredentialCheck(NO_KEYS, () -> FLEET_CA, NOW::getTime);
        StoredCredential record = new StoredCredential(null, null, on, auth);
        AuthDecision decision = check.decide(DEV_1, new byte[0], record, presented ? cert("dev-1") : null);
        assertEquals(expected, decision.reason().code(), decision.detail());
    }

    @Test
    void aCertificateForAnotherDeviceIsRefusedEvenWithAPasswordDevice() {
        CredentialCheck check = new CredentialCheck(NO_KEYS, () -> FLEET_CA, NOW::getTime);
        StoredCredential record = new StoredCredential(null, null, "1", "any");
        assertEquals(Reason.CERTIFICATE_MISMATCH, check.decide(DEV_1, new byte[0], record, cert("dev-2")).reason());
    }

    @Test
    void unknownDevicesStayUnknown() {
        CredentialCheck check = new CredentialCheck(NO_KEYS, () -> FLEET_CA, NOW::getTime);
        assertEquals(Reason.UNKNOWN_DEVICE,
                check.decide(DEV_1, new byte[0], new StoredCredential(null, null, null, null), cert("dev-1")).reason());
    }

    @Test
    void registeredCasParseByFingerprint() throws Exception {
        X509Certificate ca = cert("ca")[0];
        String print = DeviceCas.fingerprint(ca);
        DeviceCas.Parsed parsed = DeviceCas.parse(Map.of(
                print, pem("ca"),
                "0".repeat(64), pem("other-ca"),
                DeviceCas.fingerprint(cert("dev-1")[0]), pem("dev-1"),
                "garbage", "not a certificate"));
        assertEquals(Set.of(print), parsed.cas().keySet());
        assertEquals(3, parsed.problems().size(), parsed.problems().toString());
        DeviceCas cas = new DeviceCas();
        assertTrue(cas.replace(parsed));
        assertFalse(cas.replace(DeviceCas.parse(Map.of(print, pem("ca")))));
        assertEquals(List.of(ca), cas.anchors().stream().map(TrustAnchor::getTrustedCert).toList());
    }

    @Test
    void theTruststoreHoldsTheCas(@TempDir Path dir) throws Exception {
        Path file = dir.resolve("device-cas.p12");
        X509Certificate ca = cert("ca")[0];
        DeviceCaSync.write(file, Map.of(DeviceCas.fingerprint(ca), ca));
        KeyStore store = KeyStore.getInstance("PKCS12");
        try (InputStream in = Files.newInputStream(file)) {
            store.load(in, DeviceCaSync.TRUSTSTORE_PASSWORD.toCharArray());
        }
        assertEquals(ca, store.getCertificate(DeviceCas.fingerprint(ca)));
        DeviceCaSync.write(file, Map.of());
        try (InputStream in = Files.newInputStream(file)) {
            store.load(in, DeviceCaSync.TRUSTSTORE_PASSWORD.toCharArray());
        }
        assertEquals(0, store.size());
    }

    @Test
    void theListenerAsksForCertificatesOnlyWhereTheDeviceCasAreRead() {
        Map<String, String> base = Map.of(
                "OTA_BROKER_STATE_DIR", "/tmp/b",
                "OTA_BROKER_TLS_KEYSTORE", "/tmp/k.p12",
                "OTA_BROKER_TLS_KEYSTORE_PASSWORD", "p",
                "OTA_MQTT_PLATFORM_USER", "u",
                "OTA_MQTT_PLATFORM_PASSWORD", "pw");
        Map<String, String> redis = new java.util.HashMap<>(base);
        redis.put("OTA_BROKER_AUTH_MODE", "redis");
        redis.put("OTA_BROKER_REDIS_URL", "redis://127.0.0.1:6379/1");
        String xml = HiveMqConfigXml.render(BrokerConfig.fromEnv(redis));
        assertTrue(xml.contains("<client-authentication-mode>OPTIONAL</client-authentication-mode>"), xml);
        assertTrue(xml.contains("device-cas.p12"), xml);
        Map<String, String> http = new java.util.HashMap<>(base);
        http.put("OTA_BROKER_AUTH_URL", "http://127.0.0.1:1/v1/broker/authenticate");
        http.put("OTA_BROKER_AUTH_KEY", "k");
        String plain = HiveMqConfigXml.render(BrokerConfig.fromEnv(http));
        assertTrue(plain.contains("<client-authentication-mode>NONE</client-authentication-mode>"), plain);
        assertFalse(plain.contains("truststore"), plain);
    }
}
