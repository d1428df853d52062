package io.otarollout.broker;

import static io.otarollout.broker.DeviceCertificateTest.cert;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.sun.net.httpserver.HttpServer;
import java.io.IOException;
import java.io.OutputStream;
import java.net.InetSocketAddress;
import java.net.URI;
import java.nio.charset.StandardCharsets;
import java.security.cert.TrustAnchor;
import java.security.cert.X509Certificate;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Date;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

/**
 * Certificate devices in http mode: the facts the broker sends the control plane (EMQX's
 * cert_common_name and cert_subject, the names, the fingerprint, the broker's verdict on the
 * chain), the request HttpDeviceAuth builds from a presented chain (read by a local HTTP
 * server), the certificate refusals accepted from the control plane, and the listener's config.
 */
class HttpModeCertificatesTest {
    private static final Date NOW = new Date(1_796_000_000_000L); // 2026-11
    private static final Set<TrustAnchor> FLEET_CA = Set.of(new TrustAnchor(cert("ca")[0], null));
    private static final ObjectMapper JSON = new ObjectMapper();

    private HttpServer server;
    private final List<JsonNode> received = new ArrayList<>();
    private volatile String answer = "";

    @BeforeEach
    void startServer() throws IOException {
        server = HttpServer.create(new InetSocketAddress("127.0.0.1", 0), 0);
        server.createContext("/v1/broker/authenticate", exchange -> {
            synchronized (received) {
                received.add(JSON.readTree(exchange.getRequestBody().readAllBytes()));
            }
            byte[] body = answer.getBytes(StandardCharsets.UTF_8);
            exchange.getResponseHeaders().add("Content-Type", "application/json");
            exchange.sendResponseHeaders(200, body.length);
            try (OutputStream out = exchange.getResponseBody()) {
                out.write(body);
            }
        });
        server.start();
    }

    @AfterEach
    void stopServer() {
        server.stop(0);
    }

    private HttpDeviceAuth auth() {
        URI url = URI.create("http://127.0.0.1:" + server.getAddress().getPort() + "/v1/broker/authenticate");
        return new HttpDeviceAuth(new AuthClient(url, "k", Duration.ofSeconds(5)), () -> FLEET_CA, NOW::getTime);
    }

    private JsonNode onlyRequest() {
        synchronized (received) {
            assertEquals(1, received.size(), received.toString());
            return received.get(0);
        }
    }

    @Test
    void theRequestCarriesTheCertificatesFacts() throws Exception {
        X509Certificate[] chain = cert("dev-1-san");
        JsonNode body = JSON.readTree(AuthContract.request("dev-1_0_0_2026120512", "dev-1", "", "10.0.0.7",
                CertificateFacts.of(chain, FLEET_CA, NOW)));
        assertEquals(List.of("clientid", "username", "password", "peerhost", "cert_common_name",
                "cert_subject", "cert_names", "cert_fingerprint", "cert_check"), fieldNames(body));
        assertEquals("Fleet unit 7", body.get("cert_common_name").asText());
        assertEquals(chain[0].getSubjectX500Principal().getName(), body.get("cert_subject").asText());
        assertTrue(body.get("cert_subject").asText().contains("CN=Fleet unit 7"), body.toString());
        assertEquals(List.of("Fleet unit 7", "unit-7.example", "dev-1"), texts(body.get("cert_names")));
        assertEquals(DeviceCas.fingerprint(chain[0]), body.get("cert_fingerprint").asText());
        assertEquals("ok", body.get("cert_check").asText());
    }

    @ParameterizedTest
    @CsvSource({
        "dev-1, ok",
        "dev-1-via-intermediate, ok",
        "dev-1-with-root, ok",
        "dev-2, ok", // the chain is good; whom it names is the control plane's question
        "dev-1-other-ca, certificate_untrusted",
        "dev-1-expired, certificate_expired",
        "dev-1-server-only, certificate_untrusted",
    })
    void theBrokerChecksTheChainAndSaysSo(String file, String verdict) {
        CertificateFacts facts = CertificateFacts.of(cert(file), FLEET_CA, NOW);
        assertEquals(verdict, facts.check().code());
        assertEquals(DeviceCertificate.names(cert(file)[0]), facts.names());
    }

    @Test
    void withoutARegisteredCaNoChainIsTrusted() {
        assertEquals(Reason.CERTIFICATE_UNTRUSTED, CertificateFacts.of(cert("dev-1"), Set.of(), NOW).check());
    }

    @Test
    void aPresentedChainGoesToTheControlPlaneWhichDecides() throws Exception {
        answer = "{\"result\":\"deny\",\"is_superuser\":false,\"reason\":\"certificate_mismatch\",\"device_id\":\"dev-1\"}";
        AuthDecision decision = auth().authenticate("dev-1_0_0_2026120512", "dev-1", new byte[0], "10.0.0.7",
                cert("dev-2")).get(5, TimeUnit.SECONDS);
        assertEquals(Reason.CERTIFICATE_MISMATCH, decision.reason());
        JsonNode body = onlyRequest();
        assertEquals("dev-2", body.get("cert_common_name").asText());
        assertEquals(List.of("dev-2"), texts(body.get("cert_names")));
        assertEquals("ok", body.get("cert_check").asText());
        assertEquals("", body.get("password").asText());
    }

    @Test
    void withoutACertificateTheRequestIsEmqxsFourFields() throws Exception {
        answer = "{\"result\":\"allow\",\"is_superuser\":false,\"reason\":\"ok\",\"device_id\":\"dev-1\"}";
        AuthDecision decision = auth().authenticate("dev-1_0_0_2026120512", "dev-1",
                "pw".getBytes(StandardCharsets.UTF_8), "10.0.0.7", null).get(5, TimeUnit.SECONDS);
        assertEquals(AuthDecision.allow("dev-1"), decision);
        assertEquals(List.of("clientid", "username", "password", "peerhost"), fieldNames(onlyRequest()));
    }

    @ParameterizedTest
    @CsvSource({
        "certificate_required, CERTIFICATE_REQUIRED",
        "certificate_mismatch, CERTIFICATE_MISMATCH",
        "certificate_untrusted, CERTIFICATE_UNTRUSTED",
        "certificate_expired, CERTIFICATE_EXPIRED",
        "auth_unavailable, DENIED", // the broker's own reasons never come from the control plane
        "rate_limited, DENIED",
        "ok, DENIED",
    })
    void theControlPlanesCertificateRefusalsKeepTheirNames(String reason, Reason expected) throws Exception {
        AuthDecision decision = AuthContract.decide(200, ("{\"result\":\"deny\",\"is_superuser\":false,"
                + "\"reason\":\"" + reason + "\"}").getBytes(StandardCharsets.UTF_8));
        assertEquals(expected, decision.reason());
    }

    @Test
    void httpModeAsksForCertificatesWhenItCanReadTheDeviceCas() {
        Map<String, String> http = new java.util.HashMap<>(Map.of(
                "OTA_BROKER_STATE_DIR", "/tmp/b",
                "OTA_BROKER_TLS_KEYSTORE", "/tmp/k.p12",
                "OTA_BROKER_TLS_KEYSTORE_PASSWORD", "p",
                "OTA_MQTT_PLATFORM_USER", "u",
                "OTA_MQTT_PLATFORM_PASSWORD", "pw",
                "OTA_BROKER_AUTH_URL", "http://127.0.0.1:1/v1/broker/authenticate",
                "OTA_BROKER_AUTH_KEY", "k"));
        assertFalse(BrokerConfig.fromEnv(http).deviceCertificates());
        http.put("OTA_BROKER_REDIS_URL", "redis://127.0.0.1:6379/1");
        BrokerConfig config = BrokerConfig.fromEnv(http);
        assertTrue(config.deviceCertificates());
        String xml = HiveMqConfigXml.render(config);
        assertTrue(xml.contains("<client-authentication-mode>OPTIONAL</client-authentication-mode>"), xml);
        assertTrue(xml.contains("device-cas.p12"), xml);
        http.put("OTA_BROKER_TLS_PORT", "0");
        http.put("OTA_BROKER_PORT", "1883");
        assertFalse(BrokerConfig.fromEnv(http).deviceCertificates());
    }

    private static List<String> fieldNames(JsonNode body) {
        List<String> names = new ArrayList<>();
        body.fieldNames().forEachRemaining(names::add);
        return names;
    }

    private static List<String> texts(JsonNode array) {
        List<String> out = new ArrayList<>();
        array.forEach(node -> out.add(node.asText()));
        return out;
    }
}
