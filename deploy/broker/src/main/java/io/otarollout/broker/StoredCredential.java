package io.otarollout.broker;

/**
 * A device's record in the credential store, the hash {@code <prefix><device_id>} written by
 * scheduler/credentials.py: {@code kid} (the sealing key's id), {@code box} (base64 of the
 * sealed secret), {@code on} ("1" enabled). A field is null when absent; all null: no record.
 */
record StoredCredential(String kid, String box, String on) {
    static final String[] FIELDS = {"kid", "box", "on"};
}
