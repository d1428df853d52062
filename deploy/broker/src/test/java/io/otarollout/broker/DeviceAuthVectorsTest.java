package io.otarollout.broker;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.stream.Stream;
import org.junit.jupiter.api.DynamicTest;
import org.junit.jupiter.api.TestFactory;

/**
 * The broker decides every case of tests/vectors/device_auth.json as the Python code that
 * wrote it (ota/device_auth.py, scheduler/credentials.py's verify): one test per case.
 */
class DeviceAuthVectorsTest {
    // Maven runs the tests in deploy/broker.
    private static final Path VECTORS = Path.of("../../tests/vectors/device_auth.json");

    @TestFactory
    Stream<DynamicTest> everyCaseAsPython() throws IOException {
        assertTrue(Files.isReadable(VECTORS), "missing " + VECTORS.toAbsolutePath());
        JsonNode root = new ObjectMapper().readTree(VECTORS.toFile());
        CredentialCheck check = new CredentialCheck(
                new SecretBox(CredentialKeys.parse(root.get("credential_keys").asText())));
        List<DynamicTest> tests = new ArrayList<>();
        for (JsonNode c : root.get("cases")) {
            tests.add(DynamicTest.dynamicTest(c.get("name").asText(), () -> {
                AuthDecision decision = decide(check, c);
                assertEquals(c.get("expected").asText(), decision.reason().code(), decision.detail());
                if (decision.allowed()) {
                    String clientId = c.get("client_id").asText();
                    assertEquals(clientId.substring(0, clientId.length() - "_0_1_2026120512".length()),
                            decision.deviceId());
                }
            }));
        }
        assertTrue(tests.size() > 40, "too few cases: " + tests.size());
        return tests.stream();
    }

    /** What RedisDeviceAuth does, with the stored record from the file instead of Redis. */
    private static AuthDecision decide(CredentialCheck check, JsonNode c) {
        IotdaCheck.Screened screened = IotdaCheck.screen(
                c.get("client_id").asText(), c.get("username").asText(), c.get("now_ms").asLong());
        if (screened.refused()) {
            return AuthDecision.refuse(screened.refusal());
        }
        JsonNode record = c.get("record");
        StoredCredential stored = record.isNull() ? new StoredCredential(null, null, null)
                : new StoredCredential(text(record, "kid"), text(record, "box"), text(record, "on"));
        return check.decide(screened.parsed(), c.get("password").asText().getBytes(StandardCharsets.UTF_8), stored);
    }

    private static String text(JsonNode record, String field) {
        JsonNode node = record.get(field);
        return node == null || node.isNull() ? null : node.asText();
    }
}
