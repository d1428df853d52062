package io.otarollout.broker;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.hivemq.extension.sdk.api.packets.connect.ConnackReasonCode;
import java.nio.charset.StandardCharsets;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;
import org.junit.jupiter.params.provider.ValueSource;

class AuthContractTest {
    private static byte[] utf8(String text) {
        return text.getBytes(StandardCharsets.UTF_8);
    }

    @Test
    void requestIsEmqxShapedJson() throws Exception {
        JsonNode body = new ObjectMapper().readTree(
                AuthContract.request("d_0_1_2026120512", "d", "p\"w\u00e9", "127.0.0.1"));
        assertEquals("d_0_1_2026120512", body.get("clientid").asText());
        assertEquals("d", body.get("username").asText());
        assertEquals("p\"w\u00e9", body.get("password").asText());
        assertEquals("127.0.0.1", body.get("peerhost").asText());
        assertEquals(4, body.size());
    }

    @Test
    void allowCarriesTheDeviceId() throws Exception {
        AuthDecision decision = AuthContract.decide(200, utf8(
                "{\"result\":\"allow\",\"is_superuser\":false,\"reason\":\"ok\",\"device_id\":\"d1\"}"));
        assertEquals(AuthDecision.allow("d1"), decision);
    }

    @ParameterizedTest
    @CsvSource({
        "bad_password, BAD_USER_NAME_OR_PASSWORD",
        "unknown_device, BAD_USER_NAME_OR_PASSWORD",
        "username_mismatch, BAD_USER_NAME_OR_PASSWORD",
        "malformed_client_id, BAD_USER_NAME_OR_PASSWORD",
        "clock_skew, BAD_USER_NAME_OR_PASSWORD",
        "disabled, NOT_AUTHORIZED",
        "something_new, NOT_AUTHORIZED"})
    void denyMapsToConnack(String reason, ConnackReasonCode connack) throws Exception {
        AuthDecision decision = AuthContract.decide(200, utf8(
                "{\"result\":\"deny\",\"is_superuser\":false,\"reason\":\"" + reason + "\"}"));
        assertEquals(connack, decision.reason().connack);
        assertEquals(reason.equals("something_new") ? "denied" : reason, decision.reason().code());
    }

    @ParameterizedTest
    @ValueSource(strings = {
        "", "[]", "not json", "{}", "{\"result\":\"maybe\"}", "{\"result\":\"allow\"}",
        "{\"result\":\"allow\",\"device_id\":\"a/+\"}", "{\"result\":\"allow\",\"device_id\":7}"})
    void contractBreachesAreUnavailability(String body) {
        assertThrows(AuthContract.BadResponse.class, () -> AuthContract.decide(200, utf8(body)));
    }

    @Test
    void anyStatusButOkIsUnavailability() {
        assertThrows(AuthContract.BadResponse.class, () -> AuthContract.decide(401,
                utf8("{\"result\":\"allow\",\"device_id\":\"d1\"}")));
        assertEquals(ConnackReasonCode.SERVER_UNAVAILABLE, Reason.AUTH_UNAVAILABLE.connack);
    }
}
