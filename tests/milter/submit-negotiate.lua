-- submit-negotiate.lua: tn-submit-milter asks only for the steps it uses.
-- miltertest -D socket=inet:PORT@127.0.0.1 -s submit-negotiate.lua
-- Prints one "option NAME yes|no" line per protocol option; fails
-- (error) when a step the milter needs is skipped, one it does not use
-- is still sent, or it asks for any modification action.
conn = mt.connect(socket, 20, 0.1)
if conn == nil then error("cannot connect to " .. socket) end
err = mt.negotiate(conn, nil, nil, nil)
if err ~= nil then error("negotiate: " .. err) end

local wanted_off = {
  SMFIP_NOCONNECT = SMFIP_NOCONNECT, SMFIP_NOHELO = SMFIP_NOHELO,
  SMFIP_NOUNKNOWN = SMFIP_NOUNKNOWN, SMFIP_NODATA = SMFIP_NODATA,
  SMFIP_NOEOH = SMFIP_NOEOH, SMFIP_NR_HDR = SMFIP_NR_HDR,
  SMFIP_NR_BODY = SMFIP_NR_BODY,
}
local wanted_on = {
  SMFIP_NOMAIL = SMFIP_NOMAIL, SMFIP_NORCPT = SMFIP_NORCPT,
  SMFIP_NOBODY = SMFIP_NOBODY, SMFIP_NOHDRS = SMFIP_NOHDRS,
  SMFIP_NR_MAIL = SMFIP_NR_MAIL, SMFIP_NR_RCPT = SMFIP_NR_RCPT,
}
for name, bit in pairs(wanted_off) do
  local set = mt.test_option(conn, bit)
  mt.echo("option " .. name .. " " .. (set and "yes" or "no"))
  if not set then error(name .. " not requested") end
end
for name, bit in pairs(wanted_on) do
  local set = mt.test_option(conn, bit)
  mt.echo("option " .. name .. " " .. (set and "yes" or "no"))
  if set then error(name .. " requested: the milter needs that step") end
end
for _, a in ipairs({SMFIF_ADDHDRS, SMFIF_CHGHDRS, SMFIF_CHGBODY, SMFIF_ADDRCPT,
                    SMFIF_DELRCPT, SMFIF_QUARANTINE, SMFIF_CHGFROM}) do
  if mt.test_action(conn, a) then error("action " .. a .. " requested") end
end
mt.disconnect(conn)
mt.echo("negotiate ok")
