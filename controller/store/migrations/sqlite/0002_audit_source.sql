-- 2: where an audited action came from: the client IP and the device (id,
-- or "jkt:<thumbprint>" for a device key not registered yet). Sign-ins,
-- failed sign-ins and device creation fill them; admin changes record the
-- admin's IP.
ALTER TABLE audit ADD COLUMN ip TEXT NOT NULL DEFAULT '';
ALTER TABLE audit ADD COLUMN device TEXT NOT NULL DEFAULT '';
