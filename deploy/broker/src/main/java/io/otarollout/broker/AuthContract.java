package io.otarollout.broker;

import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.util.LinkedHashMap;
import java.util.Map;

/**
 * The wire format of the control plane's device authentication (EMQX's HTTP-auth shape).
 * Request: {@code {"clientid", "username", "password", "peerhost"}}, plus, when the device
 * presented a client certificate, {@code "cert_common_name", "cert_subject"} (EMQX's
 * placeholders), {@code "cert_names"} (a list), {@code "cert_fingerprint"} and
 * {@code "cert_check"} ({@link CertificateFacts}; absent without a certificate). Response, status 200:
 * {@code {"result": "allow"|"deny", "is_superuser": false, "reason": "<code>",
 * "device_id": "<id>"}}. Pure: bytes in, a decision out; the HTTP is {@link AuthClient}'s.
 */
final class AuthContract {
    private static final ObjectMapper JSON = new ObjectMapper();

    /** A response that breaks the contract; treated like an unreachable endpoint. */
    static final class BadResponse extends Exception {
        private static final long serialVersionUID = 1L;

        BadResponse(String message) {
            super(message);
        }
    }

    private AuthContract() {}

    static byte[] request(String clientId, String username, String password, String peerHost) {
        return request(clientId, username, password, peerHost, null);
    }

    /** {@code certificate}: null when the device presented none. */
    static byte[] request(String clientId, String username, String password, String peerHost,
            CertificateFacts certificate) {
        Map<String, Object> body = new LinkedHashMap<>();
        body.put("clientid", clientId);
        body.put("username", username);
        body.put("password", password);
        body.put("peerhost", peerHost);
        if (certificate != null) {
            body.put("cert_common_name", certificate.commonName());
            body.put("cert_subject", certificate.subject());
            body.put("cert_names", certificate.names());
            body.put("cert_fingerprint", certificate.fingerprint());
            body.put("cert_check", certificate.check().code());
        }
        try {
            return JSON.writeValueAsBytes(body);
        } catch (JsonProcessingException e) {
            throw new IllegalStateException("strings and a list of strings always serialise", e);
        }
    }

    static AuthDecision decide(int status, byte[] body) throws BadResponse {
        if (status != 200) {
            throw new BadResponse("status " + status);
        }
        JsonNode root;
        try {
            root = JSON.readTree(body);
        } catch (java.io.IOException e) {
            throw new BadResponse("body is not JSON: " + e.getMessage());
        }
        if (root == null || !root.isObject()) {
            throw new BadResponse("body is not a JSON object");
        }
        String result = text(root, "result");
        if ("deny".equals(result)) {
            return AuthDecision.refuse(Reason.ofControlPlane(text(root, "reason")).orElse(Reason.DENIED));
        }
        if (!"allow".equals(result)) {
            throw new BadResponse("result is " + (result.isEmpty() ? "missing" : "'" + result + "'"));
        }
        String deviceId = text(root, "device_id");
        if (!ClientId.isUsableDeviceId(deviceId)) {
            throw new BadResponse("allow without a usable device_id: '" + deviceId + "'");
        }
        return AuthDecision.allow(deviceId);
    }

    private static String text(JsonNode root, String field) {
        JsonNode node = root.get(field);
        return node != null && node.isTextual() ? node.asText() : "";
    }
}
